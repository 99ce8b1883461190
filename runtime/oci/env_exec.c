/*
 * env-exec: sets environment entries that are not UTF-8, then execs the container's process.
 *
 *   env-exec HEX_ENTRY... -- PROGRAM ARG...
 *
 * Each HEX_ENTRY is the hex of one raw "NAME=value" entry. OCI runtimes read process.env from
 * JSON, which cannot carry such bytes, so the agent passes them here in ASCII and this program
 * puts them into the environment it inherited from process.env before it execs.
 *
 * Built static (gcc -static) by hack/install: images may have no libc. It opens no file, so
 * nothing of it survives the exec; PROGRAM is looked up along the container's PATH, as the
 * runtimes do.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int nibble(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Decodes in place: the bytes are half as long as their hex. */
static int unhex(char *text) {
    size_t length = strlen(text);
    if (length % 2 != 0) return -1;
    for (size_t i = 0; i < length; i += 2) {
        int high = nibble(text[i]), low = nibble(text[i + 1]);
        if (high < 0 || low < 0) return -1;
        text[i / 2] = (char)(high << 4 | low);
    }
    text[length / 2] = '\0';
    return 0;
}

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        /* putenv keeps the string itself: argv lives until the exec. */
        if (unhex(argv[i]) != 0 || strchr(argv[i], '=') == NULL || putenv(argv[i]) != 0) {
            fprintf(stderr, "env-exec: argument %d is not a hex NAME=value entry\n", i);
            return 125;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "env-exec: usage: env-exec HEX_ENTRY... -- PROGRAM ARG...\n");
        return 125;
    }
    execvp(argv[i + 1], &argv[i + 1]);
    fprintf(stderr, "env-exec: exec %s: %s\n", argv[i + 1], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
