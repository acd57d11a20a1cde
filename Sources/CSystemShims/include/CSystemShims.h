#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H
// Linux calls that Swift's Glibc module does not expose (variadic syscall, _GNU_SOURCE-only names).
#include <stddef.h>
#include <stdint.h>

/// memfd_create(2); returns a file descriptor or -1 with errno set.
int vattn_memfd_create(const char *name, unsigned int flags);
/// Thread id of the calling thread (gettid(2)).
int vattn_gettid(void);

#endif
