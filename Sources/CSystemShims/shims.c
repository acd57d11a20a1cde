#define _GNU_SOURCE
#include "CSystemShims.h"
#include <sys/syscall.h>
#include <unistd.h>

int vattn_memfd_create(const char *name, unsigned int flags) {
    return (int)syscall(SYS_memfd_create, name, flags);
}

int vattn_gettid(void) { return (int)syscall(SYS_gettid); }
