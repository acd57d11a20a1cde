// The host C compiler checks kernel_params.h's layout asserts here; Swift uses the structs through the C importer,
// NVRTC through the embedded copy of the header.
#include "kernel_params.h"
