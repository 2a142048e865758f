//! Heat (HOT) templates: parsing with line numbers, intrinsic functions, resource types.
