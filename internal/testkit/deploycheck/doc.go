// Package deploycheck holds the tests that validate the deployment files:
// the Helm chart in helm/llm-proxy (rendered by .ci/deploy-check), the plain
// manifests in k8s/, the Dockerfile and docker-compose.yml. Every Kubernetes
// object is decoded strictly into the k8s.io/api types, so an unknown,
// misspelt or wrongly cased field fails the build. It is test-only: nothing
// imports it.
package deploycheck
