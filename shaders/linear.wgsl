// placeholder: filled in by the linear kernel work.
