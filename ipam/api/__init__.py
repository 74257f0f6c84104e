"""HTTP transports: thin routes that parse, call one service, and format."""
