"""The NRI API and ttrpc's request envelope: the vendored protos and the code generated from
them."""
