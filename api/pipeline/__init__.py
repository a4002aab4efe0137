"""The gateway pipeline every protocol shares (/v1, /v2 and /v1/jobs are thin adapters
over it): read the upload within the body budget (uploads.py), refuse before routing
while the queue is full (admission.py), answer from the response cache (cache.py),
reserve a queue place, decode in the pool (decoding.py) and submit to the broker
(classifier.py); the typed dependencies handlers take (gateway.py)."""
