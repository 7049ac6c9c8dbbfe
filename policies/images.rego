package main

import rego.v1

# A digest (image@sha256:...) pins an image; otherwise it needs a tag that is not "latest".
deny_latest_tag contains msg if {
	some c in all_containers
	not contains(c.image, "@")
	problem := image_tag_problem(c.image)
	msg := sprintf("container \"%s\" image \"%s\" %s: pin a version tag or digest", [c.name, c.image, problem])
}

image_tag_problem(image) := "uses the latest tag" if endswith(image, ":latest")

image_tag_problem(image) := "has no tag" if {
	segments := split(image, "/")
	not contains(segments[count(segments) - 1], ":")
}
