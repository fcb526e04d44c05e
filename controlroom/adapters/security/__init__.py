"""Keys and secrets: server-side keys, sealing of submitted secrets, and JWKS token keys."""
