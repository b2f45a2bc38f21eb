"""Run offline-bench from a checkout without installing: `python cli.py --help`."""
from offline_bench.cli import main

if __name__ == "__main__":
    main()
