"""What keeps a gateway (and a jobs-worker) standing: memory budgets for bodies and
decoded pixels, admission before work, HTTP server limits, and returning memory."""
