#include <cstdio>
int main() { std::puts("ifmatch-proxy: not yet"); return 0; }
