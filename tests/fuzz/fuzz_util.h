/* tests/fuzz/fuzz_util.h — what the fuzz targets share: invariant checks that abort (so libFuzzer
 * and the corpus replay both report them), a hash of byte streams, and the cutter that feeds an
 * input in pieces chosen from the input. Header-only: each target is one .c file. */
#ifndef TESTS_FUZZ_FUZZ_UTIL_H
#define TESTS_FUZZ_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef FUZZ_NAME
#error "define FUZZ_NAME before including fuzz_util.h"
#endif

__attribute__((noreturn, unused)) static void
fuzz_fail(const char *what, int line)
{
    fprintf(stderr, "%s:%d: invariant broken: %s\n", FUZZ_NAME, line, what);
    abort();
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            fuzz_fail(#cond, __LINE__);                                                            \
    } while (0)

#define FNV_START 1469598103934665603ULL

/* FNV-1a over bytes, continuing from h. */
__attribute__((unused)) static uint64_t
fuzz_hash(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* Piece sizes for a cut run: a small LCG, pieces of 1..max bytes. */
struct cutter {
    uint32_t state;
    size_t max;
};

__attribute__((unused)) static size_t
cutter_next(struct cutter *c)
{
    if (c->max <= 1)
        return 1;
    c->state = c->state * 1103515245u + 12345u;
    return 1 + (c->state >> 8) % c->max;
}

/* A cutter from one config byte and the input length: max piece 1, 2, 3, 7, 16, 64, 512, 4096. */
__attribute__((unused)) static struct cutter
cutter_make(uint8_t c, size_t len)
{
    static const size_t max_piece[] = {1, 2, 3, 7, 16, 64, 512, 4096};
    return (struct cutter){.state = (uint32_t)c * 2654435761u ^ (uint32_t)len,
                           .max = max_piece[c & 7]};
}

#endif
