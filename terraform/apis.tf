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

# Service agents that get IAM grants must exist first: granting a role to a
# service agent that has not been created yet fails. On a fresh project the
# Pub/Sub agent (dead letters, CMEK), the Artifact Registry agent and the GKE
# agent (CMEK) may not exist. The GA provider has no resource that creates them
# (google_project_service_identity is google-beta only), so this runs gcloud's
# `services identity create`, which is idempotent and returns the existing
# agent; make cluster's pre-flight runs the same command first and says what
# to run when it fails.
locals {
  service_agents = toset(concat(
    ["pubsub.googleapis.com"],
    var.kms_key_name != null ? ["artifactregistry.googleapis.com"] : [],
    var.database_encryption_key != null ? ["container.googleapis.com"] : [],
  ))
}

resource "terraform_data" "service_agent" {
  for_each = local.service_agents

  input = {
    project = var.project_id
    service = each.key
  }

  provisioner "local-exec" {
    command = "gcloud beta services identity create --service=${each.key} --project=${var.project_id} --quiet"
  }
}
