/* conf/units.h — value parsers private to conf/ (the public ones are declared in conf/conf.h).
 *
 * Same contract as the public parsers: 0 and the value stored, or -1 when the text is not valid
 * (then the output is left untouched). Pure functions; any thread. */
#ifndef CONF_UNITS_H
#define CONF_UNITS_H

#include <stdbool.h>
#include <stdint.h>

/* A decimal integer without sign, at most max. */
int conf_parse_uint(const char *s, uint64_t max, uint64_t *out);

/* YAML 1.1 booleans: true/false, yes/no, on/off, in any letter case. */
int conf_parse_bool(const char *s, bool *out);

/* A non-negative decimal number, "1", "0.01", "2.5" (no sign, no exponent, at most 9 digits on
 * either side of the point). Parsed digit by digit: no locale, no strtod. */
int conf_parse_ratio(const char *s, double *out);

/* A status range for health checks: "200-399" or "200"; 100..599 and min <= max. */
int conf_parse_expect(const char *s, int *min, int *max);

#endif
