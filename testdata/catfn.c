// catfn.wasm: an HTTP function (CGI over WASI) that shows the files its
// sandbox sees. GET <route>/<path> answers the content of the file /<path>
// (GET /cat/config/app/KEY answers /config/app/KEY), or 404 when it cannot
// be opened; PUT tries to write it instead and answers "written", or 403
// "cannot write". Configs and secrets are mounted as read-only files.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
	const char *path = getenv("PATH_INFO");
	const char *method = getenv("REQUEST_METHOD");
	if (path == NULL || *path == '\0') {
		printf("Status: 400 Bad Request\nContent-Type: text/plain\n\nname a file: <route>/<path>\n");
		return 0;
	}
	if (method != NULL && strcmp(method, "PUT") == 0) {
		FILE *w = fopen(path, "w");
		if (w == NULL) {
			printf("Status: 403 Forbidden\nContent-Type: text/plain\n\n%s: cannot write\n", path);
			return 0;
		}
		fclose(w);
		printf("Content-Type: text/plain\n\n%s: written\n", path);
		return 0;
	}
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		printf("Status: 404 Not Found\nContent-Type: text/plain\n\n%s: cannot open\n", path);
		return 0;
	}
	printf("Content-Type: text/plain\n\n");
	char buf[256];
	size_t n;
	while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
		fwrite(buf, 1, n, stdout);
	}
	fclose(f);
	return 0;
}
