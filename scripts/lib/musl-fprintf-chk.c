/* Debian's LLVM libunwind (libunwind-14-dev) is built for glibc with
 * _FORTIFY_SOURCE: its error paths call glibc's __fprintf_chk, which musl
 * lacks. scripts/cross adds this to the copy of libunwind.a it links into
 * static musl binaries. The flag only asks for extra checks. */
#include <stdarg.h>
#include <stdio.h>

int __fprintf_chk(FILE *stream, int flag, const char *format, ...)
{
    va_list ap;
    int n;
    (void)flag;
    va_start(ap, format);
    n = vfprintf(stream, format, ap);
    va_end(ap);
    return n;
}
