/* A stand-in for Windows' bcryptprimitives.dll, for running hummel.exe under Wine 8 in tests.
 *
 * Rust's standard library takes its randomness from ProcessPrng in bcryptprimitives.dll, which
 * Windows 10 and later have and Wine 8 lacks: without it hummel.exe does not start. This DLL,
 * placed next to the exe, exports ProcessPrng over RtlGenRandom (advapi32's SystemFunction036),
 * which Wine has. Windows itself never loads it: it is built by the test harness only and is
 * no part of hummel.exe.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
