//! End-to-end tests for Loa live in `tests/tests/`: each starts the real binaries (and, later, a real broker and
//! simulated receivers) and checks what a person would see. This library holds nothing but this note.
