"""resnet-serve: ImageNet classification over REST with dynamic batching.

The one import package the distribution installs. The repository keeps the user's
top-level folders; they are linked in here as sub-packages:

- `resnet_serve.cli`: the `resnet-serve` command, the composition root above both sides;
- `resnet_serve.api`: the HTTP gateway (never imports torch);
- `resnet_serve.worker`: batching and engines (the inference side);
- `resnet_serve.shared`: what both sides use (settings, wire, keys, errors, metrics);
- `resnet_serve.client`: the Python client, which imports no server code.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("resnet-serve")
except PackageNotFoundError:  # running from a tree that was never installed
    __version__ = "0+unknown"
