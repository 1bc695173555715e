"""Model encryption: streaming AEAD per file, envelope keys, and the keyring."""
