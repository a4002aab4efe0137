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
from pathlib import Path

# In a source tree the three are symbolic links (POSIX only). A checkout that did not keep
# them (Windows without `core.symlinks`) has small text files there instead: say so
# here, rather than fail later on an import that names none of this.
for _layer in ("api", "worker", "shared"):
    if not (Path(__file__).parent / _layer).is_dir():
        raise ImportError(
            f"resnet_serve/{_layer} is not a directory: this checkout did not keep the "
            f"symbolic link resnet_serve/{_layer} -> ../{_layer}. resnet-serve's source "
            "tree needs a POSIX checkout with symbolic links (git config core.symlinks "
            "true); its wheel has real directories and installs anywhere"
        )

try:
    __version__ = version("resnet-serve")
except PackageNotFoundError:  # running from a tree that was never installed
    __version__ = "0+unknown"
