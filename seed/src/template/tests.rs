//! Template tests: the sample overcloud, the error table, scaling and planning.
