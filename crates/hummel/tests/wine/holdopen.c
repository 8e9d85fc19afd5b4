/* Holds a file open the way a running game does (read access, others may only read: no
 * FILE_SHARE_WRITE, no FILE_SHARE_DELETE) until its standard input closes. The Windows tests
 * run it under Wine beside hummel.exe to check that a sync retries such a file, then names it.
 *
 * Prints "open" once the file is open, or "error N" and exits 1.
 * Build: x86_64-w64-mingw32-gcc -O2 -o holdopen.exe holdopen.c
 */
#include <stdio.h>
#include <windows.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: holdopen PATH\n");
        return 2;
    }
    HANDLE h = CreateFileA(argv[1], GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING,
                           FILE_ATTRIBUTE_NORMAL, NULL);
    if (h == INVALID_HANDLE_VALUE) {
        printf("error %lu\n", GetLastError());
        fflush(stdout);
        return 1;
    }
    printf("open\n");
    fflush(stdout);
    char buf[256];
    while (fgets(buf, sizeof buf, stdin) != NULL) {
    }
    CloseHandle(h);
    return 0;
}
