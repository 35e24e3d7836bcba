"""Studies: the library function each experiments/ script calls."""
