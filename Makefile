# The two everyday commands; each installs what it needs on Debian 12.
.PHONY: run test build clean

run:    ## build the binaries, write the demo model, start a local cluster on 127.0.0.1:8000
	bash scripts/run.sh $(ARGS)

test:   ## build, run the C++ unit tests, the reference-parity and end-to-end suites
	bash scripts/test.sh

build:  ## build everything (binaries, test programs, benchmarks)
	bash scripts/build.sh

clean:
	rm -rf build
