#ifndef CCUDA_H
#define CCUDA_H
// Placeholder; the real header lands with the CUDA driver layer.
#endif
