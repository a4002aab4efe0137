"""`python -m resnet_serve` is the `resnet-serve` command."""

from resnet_serve.cli import main

main()
