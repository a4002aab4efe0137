"""What the benchmark scripts share: images, the CPU meter, load clients and reports.

The process launchers (servers, workers, redis-server) are the tests' own, in
`tests/servers.py`, `tests/redis_server.py` and `tests/cluster.py`."""
