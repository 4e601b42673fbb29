# One tessera_add_fuzzer(...) per parser; sources live beside this file.
