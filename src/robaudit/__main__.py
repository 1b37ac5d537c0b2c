"""`python -m robaudit` runs the command-line interface."""

from robaudit.cli import main

if __name__ == "__main__":
    main()
