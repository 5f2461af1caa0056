import statistics


def summarize(numbers):
    return {"count": len(numbers), "mean": statistics.fmean(numbers), "max": max(numbers)}
