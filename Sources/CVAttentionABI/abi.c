#include "vattention.h"
/* The ABI is implemented in Swift (Sources/VAttentionC); this target only publishes the header. */
