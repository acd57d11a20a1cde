#include "CCUDA.h"
// Only the struct size checks in the header need a translation unit.
