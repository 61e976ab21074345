// The same use of every macro as header_check.c, compiled as C++.
#include "header_check.c"
