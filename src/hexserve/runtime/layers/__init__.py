"""Building blocks of the models: each one a small module a tensor-parallel rewrite can replace."""
