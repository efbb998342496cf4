# The two everyday commands; each installs what it needs on Debian 12.
.PHONY: run test build clean image image-smoke

run:    ## build the binaries, write the demo model, start a local cluster on 127.0.0.1:8000
	bash scripts/run.sh $(ARGS)

test:   ## build and run every check: unit, parity, e2e, chart, sanitizers, fuzzing, image (scripts/test.sh)
	bash scripts/test.sh

build:  ## build everything (binaries, test programs, benchmarks)
	bash scripts/build.sh

image:  ## build the container image localhost/tern (deploy/Containerfile, buildah)
	bash scripts/image.sh

image-smoke: ## run the demo inside the image `make image` built: synth a model, tern up, one chat request
	bash scripts/image-smoke.sh

clean:
	rm -rf build
