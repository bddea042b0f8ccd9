"""One module per ``lmcore`` subcommand; each defines ``register(app)``."""
