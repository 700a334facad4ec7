# Write one of lme4's data sets to CSV, with the columns the benchmark uses.
# Usage: Rscript export_lme4_data.R <sleepstudy|cbpp|verbagg|insteval> <out.csv>
args <- commandArgs(trailingOnly = TRUE)
if (length(args) != 2) stop("usage: export_lme4_data.R <data set> <out.csv>")
suppressPackageStartupMessages(library(lme4))
name <- args[1]
out <- args[2]
df <- switch(name,
  sleepstudy = sleepstudy[, c("Reaction", "Days", "Subject")],
  cbpp = cbpp[, c("herd", "incidence", "size", "period")],
  # r2 is a factor N/Y in lme4; write it as 0/1 so every engine reads the same response
  verbagg = with(VerbAgg, data.frame(r2 = as.integer(r2 == "Y"), Anger = Anger, Gender = Gender,
                                     btype = btype, situ = situ, id = id, item = item)),
  insteval = InstEval[, c("y", "service", "s", "d", "dept")],
  stop("unknown data set: ", name)
)
tmp <- paste0(out, ".part")
write.csv(df, tmp, row.names = FALSE)
invisible(file.rename(tmp, out))
cat(sprintf("%s: %d rows -> %s\n", name, nrow(df), out))
