"""asc-bench's built-in plugins. Each sub-module is declared as an entry point in the group
`asc_bench`, exactly as a third-party package declares its own plugins."""
