"""The inference side: model catalog, weights, artifacts, engines, batching, brokers."""
