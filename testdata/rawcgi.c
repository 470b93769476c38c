// rawcgi.wasm: an HTTP function (CGI over WASI) whose whole output (CGI
// headers, the blank line and the body) is its request body, byte for
// byte: the tests send it exactly what they need a function to print.
#include <stdio.h>

int main(void) {
	char buf[16384];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
		if (fwrite(buf, 1, n, stdout) != n) {
			return 1;
		}
	}
	return ferror(stdin) ? 2 : 0;
}
