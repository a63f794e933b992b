data "google_project" "this" {
  project_id = var.project_id
}

locals {
  regional         = var.zone == null
  cluster_location = local.regional ? var.region : var.zone
  workload_pool    = "${var.project_id}.svc.id.goog"
  bucket_prefix    = coalesce(var.bucket_prefix, "${var.project_id}-${var.name}")
  registry_id      = coalesce(var.registry_id, "${var.name}-images")
  project_number   = data.google_project.this.number

  # Google-managed service agents that act on the project's behalf.
  pubsub_agent = "service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  ar_agent     = "service-${local.project_number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
}
