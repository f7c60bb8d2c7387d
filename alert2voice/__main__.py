"""`python -m alert2voice`: the same as the `alert2voice` command."""

from .cli import main

if __name__ == "__main__":
    main()
