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
  image_repository = "${var.region}-docker.pkg.dev/${var.project_id}/${local.registry_id}"

  # Same list as modules/gpu-node-pool (the root validation names the pools, the
  # module's precondition protects other callers).
  compact_placement_families = ["a2", "a3", "a4", "c2", "c2d", "c3", "c3d", "c4", "c4a", "c4d", "g2", "h3", "h4d", "n2", "n2d"]

  # Bucket names by purpose; adopt_existing_buckets imports these.
  bucket_names = {
    data            = "${local.bucket_prefix}-data"
    models          = "${local.bucket_prefix}-models"
    checkpoints     = "${local.bucket_prefix}-checkpoints"
    "watcher-state" = "${local.bucket_prefix}-watcher-state"
    build           = "${local.bucket_prefix}-build"
  }

  # GKE service agent (exists once container.googleapis.com is enabled).
  gke_agent = "service-${local.project_number}@container-engine-robot.iam.gserviceaccount.com"
}

locals {
  # Google-managed service agents that act on the project's behalf. Their
  # emails are fixed; terraform_data.service_agent (apis.tf) makes sure they
  # exist before anything grants them a role.
  pubsub_agent = "service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  ar_agent     = "service-${local.project_number}@gcp-sa-artifactregistry.iam.gserviceaccount.com"
}
