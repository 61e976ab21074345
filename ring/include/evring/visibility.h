/* evring/visibility.h: the libraries build with -fvisibility=hidden; EVR_API exports. */
#ifndef EVRING_VISIBILITY_H
#define EVRING_VISIBILITY_H

#define EVR_API __attribute__((visibility("default")))
#define EVR_LIKELY(x) __builtin_expect(!!(x), 1)
/* The hot path's helpers: inlined even where the compiler would rather call (cold-looking code, -O1). */
#define EVR_INLINE static inline __attribute__((always_inline))
#define EVR_UNLIKELY(x) __builtin_expect(!!(x), 0)

#endif /* EVRING_VISIBILITY_H */
