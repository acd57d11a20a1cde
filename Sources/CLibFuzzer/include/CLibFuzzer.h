// libFuzzer's driver, for a fuzzer that has its own main (vattn-fuzz picks its target from argv first). Linked only in
// the fuzzing build (scripts/fuzz.sh links libclang_rt.fuzzer_no_main); nothing references it otherwise.
#pragma once
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
