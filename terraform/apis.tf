# APIs that only some features need, and the service agents other resources
# grant roles to. The core APIs (compute, container, ...) are checked by
# `make cluster`'s pre-flight (hack/terraform/preflight.sh) before Terraform
# runs: the provider needs some of them to plan at all.
#
# disable_on_destroy = false: `terraform destroy` never turns an API off
# (other things in the project may use it).

locals {
  feature_apis = toset(concat(
    var.enable_image_streaming ? ["containerfilesystem.googleapis.com"] : [],
    var.enable_cloud_build ? ["cloudbuild.googleapis.com"] : [],
    var.github_repository != null ? ["iamcredentials.googleapis.com", "sts.googleapis.com"] : [],
  ))
}

resource "google_project_service" "feature" {
  for_each = local.feature_apis

  project                    = var.project_id
  service                    = each.key
  disable_on_destroy         = false
  disable_dependent_services = false
}

# The Pub/Sub service agent forwards dead letters (pubsub.tf) and, with
# kms_key_name, encrypts topics. On a fresh project it may not exist yet, and
# granting a role to a missing service account fails.
resource "google_project_service_identity" "pubsub" {
  project = var.project_id
  service = "pubsub.googleapis.com"
}

# Artifact Registry's agent exists only once created; CMEK needs it first.
resource "google_project_service_identity" "artifactregistry" {
  count   = var.kms_key_name == null ? 0 : 1
  project = var.project_id
  service = "artifactregistry.googleapis.com"
}

# GKE's agent encrypts Secrets with database_encryption_key.
resource "google_project_service_identity" "container" {
  count   = var.database_encryption_key == null ? 0 : 1
  project = var.project_id
  service = "container.googleapis.com"
}
