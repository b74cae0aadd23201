"""Model signatures in the field's format (model-signing / rh-model-signing): a Sigstore bundle
whose DSSE envelope carries an in-toto statement listing every model file and its sha256."""
