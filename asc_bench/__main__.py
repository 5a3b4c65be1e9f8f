"""`python -m asc_bench ...` (also what `torchrun -m asc_bench ...` runs on every rank)."""
from asc_bench.cli import main

if __name__ == "__main__":
    main()
