"""`python -m resnet_serve` is the `resnet-serve` command."""

from resnet_serve.cli import main

if __name__ == "__main__":  # not when a spawned build process re-imports this module
    main()
