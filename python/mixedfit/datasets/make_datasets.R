## Writes the data sets of mixedfit.datasets from R's lme4 package.
##
##     Rscript python/mixedfit/datasets/make_datasets.R
##
## For each data set: <name>.csv.gz (factors as labels, gzip without a time stamp so the
## output is repeatable) and one entry in datasets.json: its title and source (or references)
## from lme4's help page,
## the columns with their types and, for factors, lme4's level order and whether ordered.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})

script_path <- local({
  a <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(a) != 1) stop("run this file with Rscript")
  normalizePath(sub("^--file=", "", a))
})
out_dir <- dirname(script_path)

names <- c("sleepstudy", "cbpp", "Penicillin", "Pastes", "Dyestuff", "Dyestuff2", "InstEval",
           "VerbAgg", "grouseticks", "cake")

column_spec <- function(x) {
  if (is.factor(x)) {
    list(type = "factor", levels = levels(x), ordered = is.ordered(x))
  } else if (is.integer(x)) {
    list(type = "integer")
  } else if (is.logical(x)) {
    list(type = "logical")
  } else if (is.numeric(x)) {
    list(type = "numeric")
  } else {
    list(type = "character")
  }
}

rd_db <- tools::Rd_db("lme4")
rd_section <- function(rd, tag) {
  sec <- Filter(function(e) identical(attr(e, "Rd_tag"), tag), rd)
  if (length(sec) == 0) return("")
  gsub("\\s+", " ", trimws(paste(unlist(sec[[1]]), collapse = "")))
}
## the help page that documents a data set (Dyestuff2 is on Dyestuff's page)
help_page <- function(name) {
  for (rd in rd_db) {
    aliases <- Filter(function(e) identical(attr(e, "Rd_tag"), "\\alias"), rd)
    if (name %in% vapply(aliases, function(a) paste(unlist(a), collapse = ""), "")) return(rd)
  }
  stop("no help page for ", name)
}

meta <- list()
for (nm in names) {
  env <- new.env()
  data(list = nm, package = "lme4", envir = env)
  df <- as.data.frame(get(nm, envir = env))
  path <- file.path(out_dir, paste0(nm, ".csv.gz"))
  con <- pipe(sprintf("gzip -n -9 > %s", shQuote(path)), "wb")
  write.csv(df, con, row.names = FALSE, na = "")
  close(con)
  rd <- help_page(nm)
  src <- rd_section(rd, "\\source")
  if (!nzchar(src)) src <- rd_section(rd, "\\references")
  meta[[nm]] <- list(title = rd_section(rd, "\\title"), source = src,
                     nrow = nrow(df),
                     columns = lapply(df, column_spec))
}
meta <- list(source = list(package = "lme4", version = as.character(packageVersion("lme4")),
                           R = R.version.string,
                           license = packageDescription("lme4")$License),
             datasets = meta)
writeLines(toJSON(meta, auto_unbox = TRUE, pretty = TRUE), file.path(out_dir, "datasets.json"))
