"""HTTP entrypoints: they translate requests into use-case calls, and errors into problem documents."""
