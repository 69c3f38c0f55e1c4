/* Test-only shim for Wine 8, which lacks ProcessPrng (bcryptprimitives.dll).
 * Rust's std on x86_64-pc-windows-gnu imports it, so the shipped clipmesh.exe
 * does not load under Wine 8 without it. The Wine tests compile this into
 * system32 of their own fresh WINEPREFIX (tests/src/wine.rs); it is never
 * shipped. Real Windows 10/11 has ProcessPrng. */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

BOOL WINAPI ProcessPrng(PBYTE p, SIZE_T n) { return RtlGenRandom(p, (ULONG)n); }
