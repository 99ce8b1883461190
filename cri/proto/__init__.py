"""The CRI API (runtime.v1): the vendored upstream proto and the code generated from it."""
